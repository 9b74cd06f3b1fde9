# The pod infra container's process: holds the pod's namespaces and does
# nothing else. PID 1 ignores signals it has no handler for, so trap them:
# SIGTERM (docker stop) and SIGINT exit at once with status 0.
trap 'exit 0' TERM INT
while :; do
  /bin/busybox sleep 2147483647 &
  wait $!
done
