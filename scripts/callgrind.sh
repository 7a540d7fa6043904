# Sourced by the benchmark scripts that print instruction counts (a figure a busy
# machine does not change). callgrind_counts BINARY VAR OUT WHAT… runs the bench
# BINARY once per WHAT under valgrind's callgrind, with VAR=WHAT in its environment
# (the bench then runs one counted pass instead of criterion), and writes a line
# "WHAT INSTRUCTIONS" per run to OUT; OUT stays empty without valgrind, and a
# failed run counts 0.
callgrind_counts() {
  local bench=$1 var=$2 counts=$3 what out total
  shift 3
  : > "$counts"
  command -v valgrind > /dev/null || return 0
  for what in "$@"; do
    out=$(mktemp)
    env "$var=$what" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" 2> "$out" || true
    total=$(grep -oE 'Collected : [0-9]+' "$out" | grep -oE '[0-9]+' || echo 0)
    echo "$what $total" >> "$counts"
    rm -f "$out"
  done
}
