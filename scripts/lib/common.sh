# Shared helpers of the scripts that start test processes (control-plane, node, conformance).
# Sourced, not run. The sourcing script sets LOG_TAG before using log/die.

log() { printf '[%s] %s\n' "${LOG_TAG:-script}" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# A free TCP port on 127.0.0.1 (chosen by the kernel).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Is the process in pid file FILE alive and running binary NAME? (Guards against a recycled
# pid: only processes these scripts started are ever signalled.) A process `spawn` started that
# is still `setsid` about to exec NAME counts: on a busy machine the exec can take longer than
# `spawn` waits, and taking it for dead would start a second one and leave the first running.
pid_alive() {
	local file="$1" name="$2" pid argv=()
	[[ -f "$file" ]] || return 1
	pid="$(cat "$file")"
	[[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
	mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || true
	if [[ "${argv[0]:-}" == setsid || "${argv[0]:-}" == */setsid ]]; then
		argv=("${argv[@]:1}")
	fi
	[[ "${argv[0]:-}" == */"$name" || "${argv[0]:-}" == "$name" ]]
}

# spawn DIR NAME BINARY ARGS...: runs BINARY detached (own session), logs to DIR/logs/NAME.log,
# pid in DIR/NAME.pid, command line in DIR/logs/NAME.cmdline.
spawn() {
	local dir="$1" name="$2" binary="$3"
	shift 3
	mkdir -p "$dir/logs"
	printf '%q ' "$binary" "$@" >"$dir/logs/$name.cmdline"
	# fds 8 and 9 carry the scripts' build locks: a daemon must not hold them for its life.
	setsid "$binary" "$@" </dev/null >>"$dir/logs/$name.log" 2>&1 8>&- 9>&- &
	local pid=$! argv0 _
	echo "$pid" >"$dir/$name.pid"
	# setsid execs the binary in its own place; until it has, the pid reads as setsid, and a
	# liveness check in between (pid_alive) would take a starting process for a dead one and
	# start another beside it. Wait (at most 1 s) for the exec, or for the process to end.
	for _ in {1..50}; do
		argv0=""
		IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" 2>/dev/null || true
		[[ "$argv0" == setsid || "$argv0" == */setsid ]] || break
		sleep 0.02
	done
}

# wait_for SECONDS DIR NAME COMMAND...: polls COMMAND every 0.2 s until it succeeds. Returns 1
# on timeout, 2 as soon as process NAME (DIR/NAME.pid) has exited.
wait_for() {
	local seconds="$1" dir="$2" name="$3" deadline
	shift 3
	deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		pid_alive "$dir/$name.pid" "$name" || return 2
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# stop_process DIR NAME [GRACE]: SIGTERM to the process of DIR/NAME.pid, SIGKILL after GRACE
# seconds (default 15); removes the pid file.
stop_process() {
	local dir="$1" name="$2" grace="${3:-15}" pid deadline
	if pid_alive "$dir/$name.pid" "$name"; then
		pid="$(cat "$dir/$name.pid")"
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$((SECONDS + grace))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name ($pid) did not stop in $grace s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 10))
			while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		fi
		log "stopped $name ($pid)"
	fi
	rm -f "$dir/$name.pid"
}

# Field FIELD of `go mod download -json MODULE@VERSION` (downloads it if needed).
go_mod_field() {
	local modver="$1" field="$2" json
	if ! json="$(go mod download -json "$modver")"; then
		# The reason is in the JSON "Error" field, not on stderr.
		log "go mod download $modver failed: $(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p')"
		return 1
	fi
	printf '%s\n' "$json" | sed -n "s/^[[:space:]]*\"$field\": \"\(.*\)\",\{0,1\}$/\1/p"
}

# The `go` line of a module's go.mod (so a tools module asks for what its dependency asks
# for, no more).
go_directive() {
	local gomod
	gomod="$(go_mod_field "$1" GoMod)" || return 1
	sed -n 's/^go[[:space:]]\{1,\}\([0-9.]*\).*/\1/p' "$gomod" | head -n1
}

# go_build_tool DIR MODULE VERSION PACKAGE OUT [LDFLAGS]: builds main package PACKAGE of
# MODULE@VERSION statically (CGO_ENABLED=0) into OUT, through a throwaway tools module in DIR.
# Does nothing when OUT exists. Extra go.mod lines (e.g. replace) come from GO_EXTRA_MOD.
go_build_tool() {
	local dir="$1" module="$2" version="$3" pkg="$4" out="$5" ldflags="${6:--s -w}" goversion
	[[ -x "$out" ]] && return 0
	mkdir -p "$dir" "$(dirname "$out")"
	goversion="$(go_directive "$module@$version")" || return 1
	{
		echo "// Generated: builds $pkg of $module $version."
		echo "module tollbridge.test/tools/$(basename "$pkg")"
		echo
		echo "go $goversion"
		echo
		echo "require $module $version"
		printf '%s\n' "${GO_EXTRA_MOD:-}"
		echo
		echo "tool $pkg"
	} >"$dir/go.mod"
	(cd "$dir" && GOFLAGS=-mod=mod go mod tidy) || return 1
	(cd "$dir" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out.tmp" "$pkg") || {
		rm -f "$out.tmp"
		return 2
	}
	mv "$out.tmp" "$out"
}

# pki_leaf PKI NAME SUBJECT EXTENSION...: a P-256 key PKI/NAME.key and a certificate
# PKI/NAME.crt for SUBJECT with the given x509v3 extensions, signed by PKI/ca.{crt,key}.
pki_leaf() {
	local pki="$1" name="$2" subj="$3"
	shift 3
	(
		cd "$pki"
		umask 077
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
		printf '%s\n' "$@" >"$name.ext"
		openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
			-days 3650 -out "$name.crt" -extfile "$name.ext" 2>/dev/null
		rm -f "$name.csr" "$name.ext"
	)
}

# pki_client PKI NAME SUBJECT: a client certificate (clientAuth).
pki_client() {
	pki_leaf "$1" "$2" "$3" "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
		"extendedKeyUsage=clientAuth"
}

# write_kubeconfig FILE SERVER CERT KEY CA: a kubeconfig with the credentials inline.
write_kubeconfig() {
	local file="$1" server="$2" cert="$3" key="$4" ca="$5" user
	user="$(basename "$cert" .crt)"
	rm -f "$file"
	(umask 077 && touch "$file")
	cat >"$file" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: tollbridge-test
		  cluster:
		    server: $server
		    certificate-authority-data: $(base64 -w0 <"$ca")
		users:
		- name: $user
		  user:
		    client-certificate-data: $(base64 -w0 <"$cert")
		    client-key-data: $(base64 -w0 <"$key")
		contexts:
		- name: tollbridge-test
		  context:
		    cluster: tollbridge-test
		    user: $user
		current-context: tollbridge-test
	EOF
}
