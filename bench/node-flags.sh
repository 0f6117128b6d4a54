#!/bin/sh
# The agent's memory and CPU under node flags (never run by tests):
#   sh bench/node-flags.sh [ROUNDS] ["FLAGS" ...]
# A set's words of the form NAME=value go to the environment (glibc's
# MALLOC_ARENA_MAX, say), the others to node. IDLE=45 waits 45 s before
# the idle reading (default 3).
# nginx (one worker, a small static file) on CPU 0; wrk -t1 -c32 for 8 s
# and the agent on CPU 1; each flag set in turn ("" for none), rounds
# alternating. Prints the agent's RSS 3 s after it serves (idle), after
# the load and at its peak, and its CPU per request.
set -e
cd "$(dirname "$0")/.."
rounds=${1:-2}
[ $# -gt 0 ] && shift
[ $# -eq 0 ] && set -- "" "--max-semi-space-size=4"
d=$(mktemp -d /tmp/ks-flags-XXXX)
mkdir -p "$d/www"
echo '<h1>hello</h1>' >"$d/www/index.html"
port=18999
cat >"$d/nginx.conf" <<C
user root; daemon off; worker_processes 1; pid $d/nginx.pid; error_log $d/error.log;
events { worker_connections 1024; }
http { sendfile on; keepalive_requests 1000000; access_log off; client_body_temp_path $d/body;
  proxy_temp_path $d/proxy; fastcgi_temp_path $d/fcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  server { listen 127.0.0.1:$port; root $d/www; } }
C
nginx -c "$d/nginx.conf" -p "$d" &
ng=$!
sleep 1
taskset -apc 0 "$ng" >/dev/null
for w in $(pgrep -P "$ng"); do taskset -apc 0 "$w" >/dev/null; done
printf 'recorder: { path: %s/journal }\n' "$d" >"$d/cfg.yaml"
kib() { awk -v f="$2:" '$1 == f { print int($2 / 1024) }' "/proc/$1/status"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for r in $(seq 1 "$rounds"); do
	for flags in "$@"; do
		envs="" opts=""
		for w in $flags; do
			case "$w" in -*) opts="$opts $w" ;; *=*) envs="$envs $w" ;; *) opts="$opts $w" ;; esac
		done
		# shellcheck disable=SC2086 # the flags are words
		taskset -c 1 env $envs node $opts bin/kernscope run --listen 127.0.0.1:19555 --config "$d/cfg.yaml" 2>"$d/agent.log" &
		a=$!
		until grep -q 'serving metrics' "$d/agent.log"; do sleep 0.2; done
		sleep "${IDLE:-3}"
		idle=$(kib "$a" VmRSS)
		c0=$(ticks "$a")
		reqs=$(taskset -c 1 wrk -t1 -c32 -d8s "http://127.0.0.1:$port/index.html" | awk '/requests in/ { print $1 }')
		c1=$(ticks "$a")
		printf 'round %s, flags %-26s RSS idle %s MiB, after %s MiB, peak %s MiB; agent CPU %s us/request (%s requests)\n' \
			"$r" "${flags:-none}" "$idle" "$(kib "$a" VmRSS)" "$(kib "$a" VmHWM)" \
			"$(awk -v t="$((c1 - c0))" -v n="$reqs" 'BEGIN { printf "%.2f", t * 10000 / n }')" "$reqs"
		kill "$a"
		wait "$a" 2>/dev/null || true
	done
done
kill -QUIT "$ng"
wait "$ng" 2>/dev/null || true
rm -rf "$d"
