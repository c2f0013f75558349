#!/bin/sh
# Run a job and act on how it ended: `jobmonitor submit` exits with
# 0 (success), 1 (failed), 3 (partial), 4 (cancelled), 5 (cancelled because
# the server shut down) or 2 (usage or connection error, or the server
# refused the job).
#
#     examples/run-job.sh PROJECT [NAME=VALUE]...
#
# The server address comes from JOBMONITOR_HOST / JOBMONITOR_PORT.
if [ $# -lt 1 ]; then
    echo "usage: $0 PROJECT [NAME=VALUE]..." >&2
    exit 2
fi
project=$1
shift
# Turn every NAME=VALUE into "-v NAME=VALUE", keeping values with spaces whole.
count=$#
while [ "$count" -gt 0 ]; do
    set -- "$@" -v "$1"
    shift
    count=$((count - 1))
done

jobmonitor submit "$project" "$@"
status=$?
case $status in
    0) echo "run-job: $project succeeded" ;;
    3) echo "run-job: $project only partially completed: check the errors above" ;;
    1) echo "run-job: $project failed" ;;
    4) echo "run-job: $project was cancelled" ;;
    5) echo "run-job: $project was cancelled: the server shut down; submit it again" ;;
    *) echo "run-job: could not run $project" ;;
esac
exit $status
