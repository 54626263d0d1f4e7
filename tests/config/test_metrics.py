"""The Prometheus text exposition of /metrics (format 0.0.4)."""

from config.metrics import exposition


def test_numbers_and_labelled_numbers_become_gauges():
    text = exposition({
        "audit_spool": {"depth": 3, "oldest_age_seconds": 1.5, "delivered": {"local-arr": 7, 'a"b': 1},
                        "path": "/var/x"},
        "mllp": {"answered": 0, "tls": True},
    }).decode()
    lines = text.splitlines()
    assert "carnet_audit_spool_depth 3" in lines
    assert "carnet_audit_spool_oldest_age_seconds 1.5" in lines
    assert 'carnet_audit_spool_delivered{destination="local-arr"} 7' in lines
    assert 'carnet_audit_spool_delivered{destination="a\\"b"} 1' in lines
    assert "carnet_mllp_answered 0" in lines and "carnet_mllp_tls 1" in lines
    assert not any("path" in line for line in lines)  # not a number: not a metric
    assert lines.count("# TYPE carnet_audit_spool_depth gauge") == 1
