"""Probe suite (issue 13): bad inputs, interruptions and exposure, each kept from regressing.

Every test here is fast and uses tiny data. Cases already covered elsewhere are listed in
the table at the end of this module's docstring instead of being tested twice:

- corrupt FITS header, frame shape mismatch, duplicate times, missing / bad time keys,
  zero exposure: tests/test_io_readers.py::test_fits_series_errors_name_file_and_fix
- bad YAML keys and values (CLI, one line, no traceback):
  tests/test_cli.py::test_bad_config_is_a_clear_error
- missing input folder (CLI): tests/test_cli.py::test_missing_input_is_a_clear_error
- kill -9 during the tiles, then --resume bit-identical (slow):
  tests/test_resume.py::test_sigkill_mid_fit_then_resume_gives_identical_results
"""

from __future__ import annotations

import psutil
import pytest

pytestmark = pytest.mark.probe


def _listening_sockets() -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of this process and its children."""
    me = psutil.Process()
    out = []
    for proc in [me, *me.children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                out.append((proc.pid, conn.laddr.ip, conn.laddr.port))
    return out


# ----------------------------------------------------------------------------- servers
@pytest.mark.timeout(120)
def test_local_cluster_listens_on_loopback_only():
    """The default local cluster (scheduler, nannies, workers, dashboard) binds 127.0.0.1."""
    from specfit.cluster import connect, dashboard_link
    from specfit.config import ClusterConfig

    before = set(_listening_sockets())
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        link = dashboard_link(client)
        sockets = [s for s in _listening_sockets() if s not in before]
    assert link is not None and link.startswith("http://127.0.0.1:")
    dash_port = int(link.split(":")[2].split("/")[0])
    assert dash_port in {port for _, _, port in sockets}, "the dashboard is not listening"
    # scheduler + dashboard in this process, nanny + worker in the child
    assert len(sockets) >= 3
    exposed = [s for s in sockets if s[1] not in ("127.0.0.1", "::1")]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_dashboard_address_is_a_config_key_defaulting_to_loopback():
    from specfit.config import load_config

    assert load_config({}).cluster.dashboard_address.startswith("127.0.0.1:")
    cfg = load_config({}, ["cluster.dashboard_address=0.0.0.0:8790"])
    assert cfg.cluster.dashboard_address == "0.0.0.0:8790"
