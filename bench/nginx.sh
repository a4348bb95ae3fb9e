# Sourced by the benchmarks: the -O2 test nginx with one worker, serving
# /static (return 200) and /proxy (through a keepalive upstream), on a
# random loopback port. Sets nginx, work, port, master; bench_stop undoes it.
prefix=$(bash internal/nginxtest/build-nginx.sh o2 | tail -n1)
nginx="$prefix/sbin/nginx"
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
uport=$((port + 1))
cat >"$work/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/error.log warn;
worker_rlimit_nofile 4096;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/cb; proxy_temp_path $work/pt; fastcgi_temp_path $work/ft; uwsgi_temp_path $work/ut; scgi_temp_path $work/st;
  upstream backend { server 127.0.0.1:$uport; keepalive 16; }
  server { listen 127.0.0.1:$uport; location / { return 200 "upstream\n"; } }
  server {
    listen 127.0.0.1:$port;
    location /static { return 200 "ok\n"; }
    location /proxy { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://backend; }
  }
}
CONF
probe_pid=""
bench_stop() {
  [ -n "$probe_pid" ] && pkill -INT -P "$probe_pid" 2>/dev/null && wait "$probe_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.5; rm -rf "$work"
}
"$nginx" -p "$work/" -c "$work/nginx.conf" -e "$work/error.log"
for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
master=$(cat "$work/nginx.pid")
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rps() { wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$port/$1" | awk '/Requests\/sec/ {print int($2)}'; }

# bench_wrk VARIANT...: for /static and /proxy, RUNS rounds of the variants
# in turn ("baseline" runs nothing; others run `attach VARIANT` in the
# background), then median rps and retention against the baseline. The
# caller defines attach, and may define ready_line VARIANT (the stderr line
# that says wrk may start, default "attached"), while_attached VARIANT PID
# and after_detach VARIANT.
bench_wrk() {
  local path v b m ready
  for path in static proxy; do
    declare -A runs=()
    for _ in $(seq "$RUNS"); do
      for v in "$@"; do
        if [ "$v" = baseline ]; then
          runs[$v]="${runs[$v]:-} $(rps "$path")"
          continue
        fi
        attach "$v" 2>"$work/probe.err" &
        probe_pid=$!
        ready=attached
        declare -F ready_line >/dev/null && ready=$(ready_line "$v")
        for _ in $(seq 300); do grep -qi "$ready" "$work/probe.err" 2>/dev/null && break; sleep 0.05; done
        sleep 0.5
        runs[$v]="${runs[$v]:-} $(rps "$path")"
        declare -F while_attached >/dev/null && while_attached "$v" "$probe_pid" "$path"
        # attach runs in a subshell, which defers signals: signal its child.
        pkill -INT -P "$probe_pid" 2>/dev/null || true; wait "$probe_pid" || true; probe_pid=""
        declare -F after_detach >/dev/null && after_detach "$v"
      done
    done
    b=$(median ${runs[baseline]})
    for v in "$@"; do
      m=$(median ${runs[$v]})
      printf 'wrk_%s %-32s median_rps %8s retention %s runs%s\n' "$path" "$v" "$m" "$(awk -v p="$m" -v b="$b" 'BEGIN {printf "%.3f", p/b}')" "${runs[$v]}"
    done
    unset runs
  done
}
