"""The local cluster supervisor behind `cowpod up`/`down`/`status`: starts and
stops the embedded etcd, controller, scheduler and VMs as child processes."""
