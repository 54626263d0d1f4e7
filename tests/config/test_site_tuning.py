"""config.site process tuning applied by `carnet serve` before the reactor runs."""

from __future__ import annotations

import gc

from config import site


def test_garbage_collector_is_tuned_for_serving():
    before = gc.get_threshold()
    try:
        site.tune_garbage_collector()
        assert gc.get_threshold()[0] == site.GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0  # what existed at start-up is no longer scanned
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_built_site_uses_the_lean_pool_and_the_soap_site(tmp_path):
    from config.settings import Settings
    from soap.edge import SoapHttpRequest, SoapSite
    from soap.workers import WorkerPool

    carnet = site.build(Settings(data_dir=tmp_path, threads=3), reactor=None)
    try:
        assert isinstance(carnet.threadpool, WorkerPool) and carnet.threadpool.size == 3
        assert isinstance(carnet.site, SoapSite) and carnet.site.requestFactory is SoapHttpRequest
        assert carnet.engine.pool.size() == 3  # one pooled connection per worker thread
    finally:
        carnet.stop()
