"""Data residency check (hutong.security.residency): accept/refuse matrix."""

from __future__ import annotations

import pytest

from hutong.errors import CODES, ConfigError
from hutong.security.residency import check_target, parse_region_map, redact
from hutong.security.settings import SecuritySettings

CN = SecuritySettings()  # allowed_regions ("CN",), storage_region "CN"
MAP = parse_region_map(".bjhealth.cn=CN, db.internal=CN, .amazonaws.com=US, 203.0.113.0/24=CN, "
                       "cn-db.amazonaws.com=CN, hk.example.com=HK")


@pytest.mark.parametrize(("url", "region"), [
    ("sqlite:///var/hutong.db", "CN"),
    ("sqlite:////abs/path/hutong.db", "CN"),
    ("file:///srv/exports/sr-1", "CN"),
    ("file://localhost/srv/exports", "CN"),
    ("/srv/exports/sr-1", "CN"),
    ("exports/relative", "CN"),
    ("postgresql://hutong@127.0.0.1:5432/hutong", "CN"),
    ("postgresql+psycopg://u:p@localhost/hutong", "CN"),
    ("postgresql://[::1]:5432/hutong", "CN"),
    ("postgresql://10.20.30.40/hutong", "CN"),          # RFC 1918: this site
    ("postgresql://192.168.1.5/hutong", "CN"),
    ("postgresql://172.16.0.9/hutong", "CN"),
    ("postgresql:///hutong?host=/run/postgresql", "CN"),  # Unix socket
    ("postgresql://db.internal/hutong", "CN"),            # exact mapping
    ("postgresql://pg1.bjhealth.cn/hutong", "CN"),        # suffix mapping
    ("https://api.bjhealth.cn/ingest", "CN"),
    ("https://bjhealth.cn/x", "CN"),                      # the suffix's own domain
    ("postgresql://203.0.113.7/hutong", "CN"),            # CIDR mapping
    ("postgresql://cn-db.amazonaws.com/x", "CN"),         # exact beats the broader suffix
    ("s3://bucket/exports?region=cn-north-1", "CN"),
    ("oss://bucket/exports?region=cn-hangzhou", "CN"),
])
def test_accepted(url: str, region: str) -> None:
    assert check_target(url, CN, region_map=MAP) == region


@pytest.mark.parametrize(("url", "code"), [
    ("postgresql://rds.us-east-1.amazonaws.com/x", "HT-0160"),   # mapped, foreign
    ("https://hk.example.com/upload", "HT-0160"),                # Hong Kong is outside the mainland
    ("s3://bucket/x?region=us-east-1", "HT-0160"),
    ("s3://bucket/x?region=ap-east-1", "HT-0160"),
    ("postgresql://db.example.org/hutong", "HT-0161"),           # unmapped name: fail closed
    ("postgresql://8.8.8.8/hutong", "HT-0161"),                  # public address, no mapping
    ("https://evil.cn/x", "HT-0161"),                            # a .cn name is not proof of location
    ("file://fileserver.example.org/share", "HT-0161"),
    ("s3://bucket/x", "HT-0161"),                                # no region given
    ("ftp://files.bjhealth.cn/x", "HT-0162"),
    ("mysql://localhost/x", "HT-0162"),
])
def test_refused(url: str, code: str) -> None:
    with pytest.raises(ConfigError) as ei:
        check_target(url, CN, region_map=MAP)
    assert ei.value.code == code
    assert "CN" in ei.value.message  # names the allowed list
    assert code in CODES


def test_message_names_target_without_credentials() -> None:
    with pytest.raises(ConfigError) as ei:
        check_target("postgresql://hutong:S3cret-Pa55@db.example.org:5432/hutong", CN, "storage", region_map={})
    msg = str(ei.value)
    assert "S3cret-Pa55" not in msg and "hutong:S3cret" not in msg
    assert "postgresql://***@db.example.org:5432/hutong" in msg and "storage" in msg
    with pytest.raises(ConfigError) as ei:
        check_target("postgresql://u:S3cret-Pa55@rds.us-east-1.amazonaws.com/x", CN, region_map=MAP)
    assert "S3cret-Pa55" not in str(ei.value) and "US" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        check_target("postgresql://db.example.org/x?user=u&password=S3cret-Pa55", CN, region_map={})
    assert "S3cret-Pa55" not in str(ei.value)
    assert redact("https://a:b@h.example:8443/p?q=1") == "https://***@h.example:8443/p?q=1"


def test_allowed_regions_and_storage_region_are_configuration() -> None:
    both = SecuritySettings(allowed_regions=("CN", "HK"))
    assert check_target("https://hk.example.com/upload", both, region_map=MAP) == "HK"
    # A platform whose own disks are declared outside the allowed list refuses even local storage.
    abroad = SecuritySettings(storage_region="SG")
    with pytest.raises(ConfigError) as ei:
        check_target("sqlite:///var/hutong.db", abroad, region_map=MAP)
    assert ei.value.code == "HT-0160"
    with pytest.raises(ConfigError):
        check_target("postgresql://127.0.0.1/x", abroad, region_map=MAP)


def test_region_map_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTONG_REGION_MAP", ".hospital.internal=CN")
    assert check_target("postgresql://pg.hospital.internal/h", CN) == "CN"
    with pytest.raises(ConfigError) as ei:
        check_target("postgresql://pg.other.internal/h", CN)
    assert ei.value.code == "HT-0161"
    monkeypatch.setenv("HUTONG_REGION_MAP", "no-equals-sign")
    with pytest.raises(ConfigError) as ei:
        check_target("postgresql://127.0.0.1/h", CN)
    assert ei.value.code == "HT-0162"
