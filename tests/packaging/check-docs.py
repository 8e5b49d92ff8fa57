#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every option `udpintercept --help` lists is documented in the man page and
offered by the bash completion; every value the completion offers is one the
CLI accepts and the man page names; every JSON field --help lists is in the
man page's JSON OUTPUT section.

  check-docs.py --cli PATH --man doc/udpintercept.1.scd --completion shell-completion/udpintercept.bash
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"


def help_options(cli):
    """{option: takes_value} from --help: lines that start (indented) with an option."""
    text = subprocess.run([cli, "--help"], check=True, capture_output=True, text=True).stdout
    options = {}
    for line in text.splitlines():
        m = re.match(r"^\s{1,8}(-\S.*?)(?:\s{2,}|$)", line)
        if not m:
            continue
        spec = m.group(1)
        names = re.findall(r"(?:^|[ ,])(--?[A-Za-z0-9][\w-]*)", spec)
        takes_value = bool(re.search(r"[ =][A-Z_\[]", spec))
        for n in names:
            options[n] = takes_value
    return text, options


def json_fields(help_text):
    """The field names --help lists after "fields:", up to the first word that
    is not one or ends the list (with ';', '.' or ')')."""
    m = re.search(r"fields:\s*(.*)", help_text, re.S)
    fields = []
    for raw in (m.group(1).split() if m else []):
        name = raw.rstrip(",;.)")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            break
        fields.append(name)
        if raw[-1] in ";.)":
            break
    return fields


def man_options(scd):
    """Options defined in the man page source: lines that start with *-...*."""
    found = set()
    for line in scd.splitlines():
        if line.startswith("*-"):
            found.update(re.findall(r"\*(--?[A-Za-z0-9][\w-]*)\*", line))
    return found


def man_section(scd, title):
    m = re.search(r"^# " + re.escape(title) + r"\n(.*?)(?=^# |\Z)", scd, re.M | re.S)
    return m.group(1) if m else ""


def complete(completion, words):
    """COMPREPLY of the completion for the command line `words` (the last is
    the word being completed), run in an empty directory."""
    script = f"""
source {BASH_COMPLETION}
source {completion}
COMP_WORDS=({' '.join(q(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={q(' '.join(words))}
COMP_POINT=${{#COMP_LINE}}
_udpintercept udpintercept {q(words[-1])} {q(words[-2])}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    with tempfile.TemporaryDirectory() as empty:
        out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True,
                             cwd=empty).stdout
    return [w for w in out.splitlines() if w]


def q(s):
    return "'" + s.replace("'", "'\\''") + "'"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cli", required=True)
    p.add_argument("--man", required=True)
    p.add_argument("--completion", required=True)
    a = p.parse_args()
    a.cli, a.completion = os.path.abspath(a.cli), os.path.abspath(a.completion)

    problems = []
    help_text, options = help_options(a.cli)
    if len(options) < 4:
        print(f"check-docs: found only {sorted(options)} in --help: its format changed?", file=sys.stderr)
        return 1
    scd = open(a.man).read()
    in_man = man_options(scd)
    offered = set(complete(a.completion, ["udpintercept", "-"]))

    for opt, takes_value in sorted(options.items()):
        if opt not in in_man:
            problems.append(f"{opt}: not documented in {a.man} (a line starting with *{opt}*)")
        if opt not in offered:
            problems.append(f"{opt}: not offered by the bash completion {a.completion}")
        if not takes_value:
            continue
        for value in complete(a.completion, ["udpintercept", opt, ""]):
            r = subprocess.run([a.cli, opt, value, "--help"], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{opt} {value}: the completion offers it, the CLI rejects it: "
                                f"{r.stderr.strip()}")
            if re.fullmatch(r"[a-z][a-z0-9-]*", value) and not re.search(r"\*" + re.escape(value) + r"\*", scd):
                problems.append(f"{opt} {value}: the completion offers it, the man page does not name it")

    fields = json_fields(help_text)
    json_section = man_section(scd, "JSON OUTPUT")
    for f in fields:
        if not re.search(r"^\*" + re.escape(f) + r"\*", json_section, re.M):
            problems.append(f"JSON field {f}: not in the man page's JSON OUTPUT section")

    for s in ("EXIT STATUS", "ENVIRONMENT", "FILES", "JSON OUTPUT", "OPTIONS"):
        if not man_section(scd, s).strip():
            problems.append(f"the man page has no {s} section")

    print(f"check-docs: {len(options)} options of --help, {len(fields)} JSON fields; "
          f"{len(problems)} problem(s)")
    for pr in problems:
        print("  " + pr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
