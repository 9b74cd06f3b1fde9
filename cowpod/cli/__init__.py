"""The `cowpod` command line (entry point `cowpod.cli.main:main`).

    main.py        parse, build the Ctx, run the verb, one error line on failure
    commands/      one module per verb family (get, apply, delete, logs/exec, wait, vm, up/down/status, ...)
    resources.py   kinds -> client services (get/list/watch/delete shared by every verb)
    printers.py    kubectl-style tables          describe.py  kubectl-style describe text
    output.py      -o wide|yaml|json|name|jsonpath  errors.py  gRPC failures -> one friendly line

Imports `cowpod.client`, `cowpod.manifest`, `cowpod.local` and the generated
stubs; nothing from controller/scheduler/agent/hypervisor.
"""
