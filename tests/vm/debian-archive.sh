# shellcheck shell=bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Where this machine's apt configuration says Debian's archive is, for the
# test tools that fetch Debian packages (tests/vm/run-matrix for kernels,
# tests/packaging/ for the root file system of the systemd proof): no
# registry's host name is written in the repository.  Sourced by bash.
#
#   resolve_uris   sets ARCHIVE_URI (suite bookworm) and SECURITY_URI
#                  (bookworm-security, may be empty); returns 1 if there is no
#                  bookworm source.  UDPI_VM_ARCHIVE_URI / UDPI_VM_SECURITY_URI
#                  override them.

# Print the first URI of an enabled 'deb' source for suite $1 from the machine's
# apt configuration (deb822 *.sources first, then one-line *.list/sources.list).
find_archive_uri() {
    local want=$1 sl='' sp='' f
    if command -v apt-config >/dev/null 2>&1; then
        eval "$(apt-config shell sl Dir::Etc::sourcelist/f sp Dir::Etc::sourceparts/d)" || true
    fi
    sl=${sl:-/etc/apt/sources.list}
    sp=${sp:-/etc/apt/sources.list.d/}
    for f in "$sp"/*.sources; do
        [[ -f $f && -r $f ]] || continue
        awk -v want="$want" '
            function flush(   n, i, j, m, s, u) {
                if (!found && tolower(enabled) != "no" && (" " types " ") ~ /[ \t]deb[ \t]/) {
                    n = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) if (s[i] == want) {
                        m = split(uris, u, /[ \t]+/)
                        for (j = 1; j <= m; j++) if (u[j] != "") { print u[j]; found = 1; break }
                        break
                    }
                }
                types = uris = suites = enabled = last = ""
            }
            { sub(/\r$/, "") }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { v = $0; sub(/^[ \t]+/, "", v)
                       if (last == "types") types = types " " v
                       else if (last == "uris") uris = uris " " v
                       else if (last == "suites") suites = suites " " v
                       next }
            { i = index($0, ":"); if (i == 0) next
              k = tolower(substr($0, 1, i - 1)); v = substr($0, i + 1)
              sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v); last = k
              if (k == "types") types = v; else if (k == "uris") uris = v
              else if (k == "suites") suites = v; else if (k == "enabled") enabled = v }
            END { flush() }' "$f" | head -n 1 | grep . && return 0
    done
    for f in "$sl" "$sp"/*.list; do
        [[ -f $f && -r $f ]] || continue
        awk -v want="$want" '
            { sub(/#.*/, ""); sub(/\r$/, "") }
            $1 != "deb" { next }
            { i = 2
              if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
              if ($(i + 1) == want) { print $i; exit } }' "$f" | head -n 1 | grep . && return 0
    done
    return 1
}

ARCHIVE_URI=
SECURITY_URI=
resolve_uris() {
    if [[ -n ${UDPI_VM_ARCHIVE_URI:-} ]]; then
        ARCHIVE_URI=$UDPI_VM_ARCHIVE_URI
    else
        ARCHIVE_URI=$(find_archive_uri bookworm) ||
            return 1
    fi
    ARCHIVE_URI=${ARCHIVE_URI%/}
    SECURITY_URI=${UDPI_VM_SECURITY_URI:-$(find_archive_uri bookworm-security || true)}
    SECURITY_URI=${SECURITY_URI%/}
}
