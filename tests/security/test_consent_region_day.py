"""A Consent's days are Beijing days: granted at 00:30 in Beijing (16:30 UTC the day
before), a consent that starts "today" is in effect at once (hutong.security.policy.now_iso)."""

from __future__ import annotations

from datetime import UTC, datetime

from hutong.security import consent as consent_rules
from hutong.security.policy import Access
from hutong.security.principal import LOCAL_OPERATOR
from hutong.security.settings import SecuritySettings
from hutong.store.sql import SqlRepository

AT = int(datetime(2026, 12, 7, 16, 30, tzinfo=UTC).timestamp() * 1000)  # 2026-12-08 00:30 in Beijing


def test_a_consent_starting_today_in_beijing_is_in_effect_after_midnight(repo: SqlRepository) -> None:
    access = Access(repo, LOCAL_OPERATOR, SecuritySettings.from_env(), clock=lambda: AT)
    now = access.now_iso()
    assert now.startswith("2026-12-08T00:30"), now
    # the resident portal's grant: period.start is the Beijing date of the day it is made
    period = {"start": "2026-12-08", "end": "2027-01-07"}
    assert consent_rules._in_period(period, now)
    assert not consent_rules._in_period({"start": "2026-12-09"}, now)
