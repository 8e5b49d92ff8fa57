# SPDX-License-Identifier: LGPL-2.1-or-later
# The first look at a script's arguments, for the project's scripts that take
# operands only (sourced; POSIX sh):
#
#   . "$top/scripts/args.sh"
#   check_args MIN MAX "$@"
#
# (or `answer_help "$@"` alone, for a script that hands its options on).
# -h or --help prints the script's header comment (its lines after the SPDX
# line, up to the first line that is not a comment: how to run it and what it
# does) on standard output and exits 0. An option it does not know, or fewer
# than MIN or more than MAX operands ('' for no limit), exits 2 with a line
# that says so on standard error. Nothing else is done before that check.

# The header comment of the script running, without its '# ' and the blank
# lines before its first words.
script_header() {
	sed -n '2,${/^#/!q;/SPDX-License-Identifier/d;s/^# \{0,1\}//;p;}' "$0" | sed '/./,$!d'
}

# -h or --help among the arguments: the header, and exit 0.
answer_help() {
	for _a in "$@"; do
		case $_a in
		-h | --help)
			script_header
			exit 0
			;;
		esac
	done
}

check_args() {
	_min=$1 _max=$2
	shift 2
	_name=${0##*/}
	answer_help "$@"
	for _a in "$@"; do
		case $_a in
		-*)
			echo "$_name: unknown option '$_a' ($_name --help says how to run it)" >&2
			exit 2
			;;
		esac
	done
	if [ $# -lt "$_min" ] || { [ -n "$_max" ] && [ $# -gt "$_max" ]; }; then
		if [ "$_min" = "$_max" ]; then
			_want=$_min
		elif [ -z "$_max" ]; then
			_want="at least $_min"
		else
			_want="$_min to $_max"
		fi
		_given="$# operands"
		[ $# -ne 1 ] || _given="1 operand"
		echo "$_name: $_given given, $_want wanted ($_name --help says how to run it)" >&2
		exit 2
	fi
}
