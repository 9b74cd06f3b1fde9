"""The vsphere provider's registry entry: settings, preflight check, factory."""

from __future__ import annotations

import asyncio
import http.client
import logging
import pathlib
import ssl
from collections.abc import Mapping
from typing import Any

from cowpod.errors import CowpodError, FailedPrecondition
from hypervisor.provider import Provider, ProviderContext
from hypervisor.providers.vsphere.settings import VSphereSettings, parse_settings

log = logging.getLogger(__name__)


def read_password(s: VSphereSettings) -> str:
    try:
        text = pathlib.Path(s.password_file).read_text()
    except OSError as err:
        raise FailedPrecondition(
            f"provider.passwordFile: cannot read {s.password_file}: {err.strerror}") from None
    password = text.strip()
    if not password:
        raise FailedPrecondition(f"provider.passwordFile: {s.password_file} is empty")
    return password


def _warn_insecure(s: VSphereSettings) -> None:
    if s.insecure and s.url.scheme == "https":
        log.warning("provider.insecure: true: %s's certificate is not verified", s.host)


def login_error(s: VSphereSettings, err: BaseException) -> CowpodError:
    """One line, naming the setting, for a failed login."""
    from hypervisor.providers.vsphere.client import ThumbprintMismatch, vim

    if isinstance(err, vim.fault.InvalidLogin):
        return FailedPrecondition(
            f"provider.passwordFile: {s.host} refused the login of {s.username!r}"
            " (wrong user name or password)")
    if isinstance(err, ssl.SSLCertVerificationError):
        return FailedPrecondition(
            f"provider.server: {s.host}'s certificate is not trusted ({err.verify_message}):"
            " set provider.caFile or provider.thumbprint (or insecure: true)")
    if isinstance(err, ThumbprintMismatch):
        return FailedPrecondition(f"provider.thumbprint: {s.host}'s certificate does not match it ({err})")
    if isinstance(err, (OSError, http.client.HTTPException)):
        return FailedPrecondition(f"provider.server: cannot reach {s.server}: {err}")
    return FailedPrecondition(f"provider.server: {s.server}: {type(err).__name__}: {err}")


class VSpherePlugin:
    name = "vsphere"

    def parse_settings(self, raw: Mapping[str, Any], where: str) -> VSphereSettings:
        return parse_settings(raw, where)

    async def check(self, settings: VSphereSettings, ctx: ProviderContext) -> None:
        """Log in, find the datacenter, folder, pool, datastore, network and template."""
        from hypervisor.providers.vsphere.client import Session
        from hypervisor.providers.vsphere.provider import resolve_place

        password = read_password(settings)
        if settings.ca_file and not await asyncio.to_thread(pathlib.Path(settings.ca_file).is_file):
            raise FailedPrecondition(f"provider.caFile: {settings.ca_file} is not a file")
        _warn_insecure(settings)
        session = Session(settings, password, ctx.clock)
        try:
            try:
                # Not idempotent: a server that is down is reported at once, not retried.
                await session.run(lambda vc: None, idempotent=False)
            except CowpodError as err:
                raise login_error(settings, err.__cause__ or err) from None
            except Exception as err:
                raise login_error(settings, err) from None
            place = await session.run(lambda vc: resolve_place(vc, settings))
            if settings.template:
                from hypervisor.providers.vsphere.provider import _find_child

                def find_template(vc: Any) -> Any:
                    from pyVmomi import vim

                    return _find_child(vc, vc.bind(place.datacenter).vmFolder, vim.VirtualMachine,
                                       settings.template)

                if await session.run(find_template) is None:
                    raise FailedPrecondition(
                        f"provider.template: no VM {settings.template!r}"
                        f" in datacenter {settings.datacenter!r}")
        finally:
            await session.close()

    def create(self, settings: VSphereSettings, ctx: ProviderContext) -> Provider:
        from hypervisor.providers.vsphere.client import Session
        from hypervisor.providers.vsphere.provider import VSphereProvider

        _warn_insecure(settings)
        return VSphereProvider(settings, ctx, Session(settings, read_password(settings), ctx.clock))


PLUGIN = VSpherePlugin()
