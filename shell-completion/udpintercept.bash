# SPDX-License-Identifier: LGPL-2.1-or-later
# bash completion for udpintercept(1): its options and their values.

_udpintercept()
{
	local cur prev words cword split
	_init_completion -s || return

	case $prev in
	-b | --backend)
		COMPREPLY=($(compgen -W 'auto fentry kprobe tracepoint' -- "$cur"))
		return
		;;
	-f | --family)
		COMPREPLY=($(compgen -W 'ipv4 ipv6' -- "$cur"))
		return
		;;
	--recv-peers)
		COMPREPLY=($(compgen -W 'exact lazy-inexact' -- "$cur"))
		return
		;;
	-c | --cgroup)
		_filedir -d
		return
		;;
	-p | --pid)
		_pids
		return
		;;
	-u | --uid)
		_uids
		return
		;;
	--metrics-labels)
		# a comma-separated list: complete its last item
		local prefix=${cur%"${cur##*,}"}
		COMPREPLY=($(compgen -P "$prefix" -W 'uid pid netns local_addr local_port remote_addr
			remote_port' -- "${cur##*,}"))
		return
		;;
	--metrics)
		COMPREPLY=($(compgen -W '127.0.0.1:9593 0.0.0.0:9593' -- "$cur"))
		return
		;;
	-i | --interval | -d | --duration | --flow-timeout | -P | --port | --max-flows | --max-sockets | --ring-buffer | \
		--metrics-max-series)
		# a number: nothing to offer
		return
		;;
	esac
	$split && return

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W '-j --json -i --interval -d --duration --flow-timeout -q --quiet -p --pid
			-u --uid -P --port -f --family -c --cgroup --metrics --metrics-labels
			--metrics-max-series -b --backend --max-flows --max-sockets --ring-buffer
			--recv-peers -v --verbose -h --help -V --version' -- "$cur"))
	fi
} &&
	complete -F _udpintercept udpintercept
