// SPDX-License-Identifier: LGPL-2.1-or-later
// A legacy consumer's view of libudpEvent.so: dlopen() it, dlsym() every
// legacy name, and read its dynamic symbol table: exactly the legacy names
// and the udpEvent_ additions are exported, it is one self-contained file
// named libudpEvent.so, and dlclose() really unloads it.
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const kLegacy[] = {"AddProbe", "DequeuePerfEvent", "getStatus", "cleanup"};
static const char *const kAdditions[] = {"udpEvent_lastError", "udpEvent_shedCount"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int failures;

#define CHECK(cond, ...)                                                                                     \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                 \
			fprintf(stderr, __VA_ARGS__);                                                        \
			fputc('\n', stderr);                                                                 \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

static int expected(const char *name)
{
	for (size_t i = 0; i < COUNT(kLegacy); i++)
		if (strcmp(name, kLegacy[i]) == 0)
			return 1;
	for (size_t i = 0; i < COUNT(kAdditions); i++)
		if (strcmp(name, kAdditions[i]) == 0)
			return 1;
	return 0;
}

// Walks the section headers for .dynsym and .dynamic: what `nm -D
// --defined-only` and `readelf -d` would print, without needing binutils.
static void check_elf(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		CHECK(0, "cannot open %s", path);
		return;
	}
	const unsigned char *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (base == MAP_FAILED) {
		CHECK(0, "cannot map %s", path);
		return;
	}
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
	CHECK(memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64,
	      "%s is not a 64-bit ELF file", path);
	const Elf64_Shdr *sh = (const Elf64_Shdr *)(base + eh->e_shoff);
	size_t defined = 0, found = 0;
	int soname_ok = 0;
	for (size_t i = 0; i < eh->e_shnum; i++) {
		const char *strtab = (const char *)(base + sh[sh[i].sh_link].sh_offset);
		if (sh[i].sh_type == SHT_DYNSYM) {
			const Elf64_Sym *sym = (const Elf64_Sym *)(base + sh[i].sh_offset);
			for (size_t j = 0; j < sh[i].sh_size / sizeof(*sym); j++) {
				const int bind = ELF64_ST_BIND(sym[j].st_info);
				if (sym[j].st_shndx == SHN_UNDEF || sym[j].st_name == 0 ||
				    (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE))
					continue;
				const char *name = strtab + sym[j].st_name;
				defined++;
				if (expected(name))
					found++;
				else
					CHECK(0, "unexpected exported symbol '%s'", name);
			}
		} else if (sh[i].sh_type == SHT_DYNAMIC) {
			const Elf64_Dyn *dyn = (const Elf64_Dyn *)(base + sh[i].sh_offset);
			for (size_t j = 0; j < sh[i].sh_size / sizeof(*dyn) && dyn[j].d_tag != DT_NULL; j++) {
				const char *value = strtab + dyn[j].d_un.d_val;
				if (dyn[j].d_tag == DT_NEEDED) {
					// The core is inside: the legacy directory holds one file.
					CHECK(strstr(value, "udpintercept") == NULL,
					      "depends on %s: it would not load from the legacy path alone",
					      value);
				} else if (dyn[j].d_tag == DT_SONAME) {
					soname_ok = strcmp(value, "libudpEvent.so") == 0;
					CHECK(soname_ok, "soname is %s, not libudpEvent.so", value);
				} else if (dyn[j].d_tag == DT_FLAGS_1) {
					CHECK(!(dyn[j].d_un.d_val & DF_1_NODELETE),
					      "marked NODELETE: dlclose() could never unload it");
				}
			}
		}
	}
	CHECK(found == COUNT(kLegacy) + COUNT(kAdditions) && defined == found,
	      "exports %zu symbols, %zu of the %zu expected", defined, found,
	      COUNT(kLegacy) + COUNT(kAdditions));
	CHECK(soname_ok, "no soname libudpEvent.so");
	printf("dynamic symbol table: %zu exported symbols, all expected\n", defined);
	munmap((void *)base, (size_t)st.st_size);
}

static int mapped(const char *real_path)
{
	FILE *maps = fopen("/proc/self/maps", "re");
	char line[PATH_MAX + 128];
	int hit = 0;
	while (maps && fgets(line, sizeof(line), maps))
		if (strstr(line, real_path))
			hit = 1;
	if (maps)
		fclose(maps);
	return hit;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s path/to/libudpEvent.so\n", argv[0]);
		return 2;
	}
	const char *path = argv[1];
	const char *slash = strrchr(path, '/');
	CHECK(strcmp(slash ? slash + 1 : path, "libudpEvent.so") == 0, "the library is named %s", path);
	char real_path[PATH_MAX];
	if (!realpath(path, real_path)) {
		fprintf(stderr, "FAIL: %s does not exist\n", path);
		return 1;
	}

	check_elf(path);

	// As the legacy example loads it.
	void *handle = dlopen(path, RTLD_LAZY);
	if (!handle) {
		fprintf(stderr, "FAIL: dlopen: %s\n", dlerror());
		return 1;
	}
	for (size_t i = 0; i < COUNT(kLegacy); i++) {
		dlerror();
		void *sym = dlsym(handle, kLegacy[i]);
		const char *err = dlerror();
		CHECK(sym && !err, "dlsym(%s): %s", kLegacy[i], err ? err : "NULL");
	}
	for (size_t i = 0; i < COUNT(kAdditions); i++)
		CHECK(dlsym(handle, kAdditions[i]) != NULL, "dlsym(%s): %s", kAdditions[i], dlerror());
	// The embedded core stays out of sight.
	CHECK(dlsym(handle, "_ZN12udpintercept6TracerD1Ev") == NULL, "the C++ core's symbols are visible");

	// Loading starts nothing: getStatus() is 0 before AddProbe().
	unsigned (*get_status)(void) = (unsigned (*)(void))dlsym(handle, "getStatus");
	CHECK(get_status && get_status() == 0, "getStatus() is not 0 before AddProbe()");

	CHECK(mapped(real_path), "%s is not in /proc/self/maps after dlopen", real_path);
	CHECK(dlclose(handle) == 0, "dlclose: %s", dlerror());
	CHECK(!mapped(real_path), "%s is still mapped after dlclose: something pins it", real_path);

	if (failures)
		return 1;
	printf("ok: %s exports exactly the legacy ABI and unloads cleanly\n", path);
	return 0;
}
