# Sourced by the device check scripts (gpu_check.sh, process_pool_check.sh); needs LOG set.
# step SECONDS COMMAND...: the command's output and exit status into $LOG, under its own time limit, so a step
# that hangs does not take the rest of the check with it.
step() {
    local limit=$1
    shift
    echo "== $*" >>"$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "rc $? in $((SECONDS - start)) s" >>"$LOG"
}
