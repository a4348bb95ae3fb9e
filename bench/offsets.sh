# Sourced by the benchmarks: byte offsets of the nginx fields the default
# probe set reads, from ngxprobe's own layout dump of the binary, for
# tools that cannot follow nginx's typedefs or DWARF 5 bitfields
# (bpftrace 0.17, perf probe).
nginx_offsets() { # NGINX
  local nginx=$1 ngxprobe=${NGXPROBE:-bin/ngxprobe}
  off() { # TYPE FIELD -> byte offset
    "$ngxprobe" fields --binary "$nginx" "$1" | awk -v f="$2" '$0 ~ "[ *]"f"(:[0-9]+)?;" {for (i=1;i<=NF;i++) if ($i=="byte") {sub(",","",$(i+1)); print $(i+1); exit}}'
  }
  off_conn=$(off ngx_http_request_t connection)
  off_status=$(($(off ngx_http_request_t headers_out) + $(off ngx_http_headers_out_t status)))
  off_number=$(off ngx_connection_t number)
  off_read=$(off ngx_connection_t read)
  off_write=$(off ngx_connection_t write)
  off_cflags=$(off ngx_connection_t timedout)
  off_evflags=$(off ngx_event_t eof)
}
