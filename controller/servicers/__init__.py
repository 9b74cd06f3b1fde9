"""gRPC servicers, one module per service: decode -> domain -> encode, nothing more.

Errors are raised as `cowpod.errors` exceptions and mapped to status codes by
`controller.rpc.service_handler`; watch methods yield pre-encoded bytes.
"""
