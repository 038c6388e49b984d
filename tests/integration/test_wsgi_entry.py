"""The module gunicorn serves (``wsgi:app``), imported as a worker imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import migrated_sqlite

ROOT = Path(__file__).resolve().parents[2]


def test_the_served_app_keeps_its_start_up_objects_out_of_the_collectors_way(tmp_path: Path) -> None:
    env = {**os.environ, "PRO_SECRET_KEY": "wsgi-test", "PRO_DATABASE_URL": migrated_sqlite(tmp_path, "wsgi"),
           "PRO_BASE_URL": "http://127.0.0.1"}
    probe = (
        "import gc, wsgi; "
        "before = gc.get_freeze_count(); "
        "client = wsgi.app.test_client(); status = client.get('/healthz').status_code; "
        "print(wsgi.app.import_name, before, gc.isenabled(), status)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    name, frozen, enabled, status = done.stdout.split()
    assert name == "pro_app"
    assert int(frozen) > 10_000  # the modules, mappings and registry built at start-up
    assert enabled == "True"  # what requests make is still collected
    assert status == "200"
