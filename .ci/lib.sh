# Shared by the .ci scripts (sourced, not run): the packages they install,
# the peers' libraries, the bench binaries they run, the medians they take.

# The peer allocators as Debian ships them.
LIBMIMALLOC=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
LIBJEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
LIBTCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4

# need_command CMD PACKAGE, need_file PATH PACKAGE, need_peers: what to
# install; install_needed installs it with apt-get (nothing if all is there).
NEEDED=()
need_command() { command -v "$1" >/dev/null || NEEDED+=("$2"); }
need_file() { [ -e "$1" ] || NEEDED+=("$2"); }
need_peers() {
    need_file "$LIBMIMALLOC" libmimalloc2.0
    need_file "$LIBJEMALLOC" libjemalloc2
    need_file "$LIBTCMALLOC" libtcmalloc-minimal4
}
# Another apt-get or dpkg (an unattended upgrade on a fresh machine) may
# hold the dpkg lock: wait for it, up to ten minutes, rather than fail.
APT=(apt-get -o DPkg::Lock::Timeout=600)
install_needed() {
    if [ ${#NEEDED[@]} -gt 0 ]; then
        "${APT[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq "${NEEDED[@]}" >/dev/null
    fi
}

# The executable of bench target $1, built if needed.
bench_exe() {
    cargo bench --no-run --bench "$1" --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' | grep "/$1-" | tail -n 1 | cut -d'"' -f4
}

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
