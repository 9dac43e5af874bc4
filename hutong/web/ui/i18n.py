"""zh-CN first, English on request: the portals' words in one table.

``lang`` comes from the ``lang`` query parameter (which also sets a cookie) or
the cookie; anything else is zh-CN.  A missing English text falls back to the
Chinese one, a missing key shows the key (so it is noticed, not hidden).
"""

from __future__ import annotations

from collections.abc import Mapping

LANGS = ("zh-CN", "en")

# key -> (zh-CN, en).  Portals add their own keys with add().
MESSAGES: dict[str, tuple[str, str]] = {
    "app.name": ("互通 · 区域全民健康信息平台", "Hutong regional health information platform"),
    "app.skip": ("跳到正文", "Skip to content"),
    "nav.clinician": ("医生工作站", "Clinician workspace"),
    "nav.resident": ("我的健康档案", "My health record"),
    "nav.console": ("卫健委管理台", "Commission console"),
    "nav.signout": ("退出", "Sign out"),
    "nav.lang": ("English", "中文"),
    "signin.title": ("登录", "Sign in"),
    "signin.staff": ("医生、卫健委及运维人员登录", "Clinicians, commission staff and operators"),
    "signin.resident": ("居民登录（身份证号 + 短信验证码）", "Residents (ID number + SMS code)"),
    "signin.username": ("用户名", "Username"),
    "signin.password": ("密码", "Password"),
    "signin.totp": ("动态口令（6位）", "Authenticator code (6 digits)"),
    "signin.submit": ("登录", "Sign in"),
    "signin.id_number": ("身份证号", "Resident ID number"),
    "signin.send_code": ("获取验证码", "Send code"),
    "signin.code": ("短信验证码", "SMS code"),
    "signin.code_sent": ("如该身份证号已开通账户，验证码已发送至登记的手机。",
                         "If this ID number has an account, a code was sent to its registered phone."),
    "signin.failed": ("登录失败：", "Sign-in failed: "),
    "signin.continue": ("已登录：进入工作台", "Signed in: continue"),
    "signin.expired": ("登录已过期，请重新登录。", "Your session has ended; please sign in again."),
    "signin.needed": ("请先登录。", "Please sign in."),
    "signin.code_wait": ("验证码每分钟只能获取一次，请在 {n} 秒后重试。",
                         "A code can be sent once a minute: try again in {n} seconds."),
    "signin.code_again": ("如未收到，可在 1 分钟后重新获取。", "If none arrives, you can ask again after a minute."),
    # sign-in errors by code (the link carries the code only: /?error=HT-0127)
    "signin.err.generic": ("请核对后重试。", "Please check and try again."),
    "signin.err.HT-0127": ("用户名、密码或动态口令有误。多次失败后需稍候再试。",
                           "Username, password or authenticator code wrong. After repeated failures, wait a "
                           "moment before trying again."),
    "signin.err.HT-0128": ("多次登录失败，账户已暂时锁定，请稍后再试或联系管理员。",
                           "Too many failed sign-ins: the account is locked for a while; try later or ask an "
                           "administrator."),
    "signin.err.HT-0126": ("账户已停用或锁定，请联系管理员。", "The account is disabled or locked: ask an administrator."),
    "signin.err.HT-0129": ("密码已过期，请先修改密码。", "The password has expired: change it first."),
    "signin.err.HT-0134": ("身份证号或验证码有误，或验证码已过期、已使用，请重新获取。",
                           "ID number or code wrong, or the code expired or was used: ask for a new one."),
    "signin.err.HT-0135": ("身份证号或验证码有误，或验证码已过期、已使用，请重新获取。",
                           "ID number or code wrong, or the code expired or was used: ask for a new one."),
    "signin.err.HT-0139": ("该动态口令已使用过，请等待下一个口令。", "That authenticator code was used already: wait for "
                           "the next one."),
    "signin.err.HT-0138": ("请填写完整的登录信息。", "Please fill in every sign-in field."),
    "record.heading": ("健康档案：{name}", "Health record: {name}"),
    "error.title": ("无法完成请求", "The request could not be completed"),
    "error.back": ("返回", "Back"),
    "error.generic": ("请求未能完成，请返回重试；如仍有问题，请将下方代码告知服务台。",
                      "The request could not be completed; if it persists, give the code below to the service desk."),
}

# What the error page says for the codes a portal user meets (hutong.errors); the
# raise site's own sentence is for developers and shown in English only.
MESSAGES.update({f"error.{code}": texts for code, texts in {
    "HT-0041": ("请求参数有误，请返回重试。", "A parameter of the request is invalid."),
    "HT-0056": ("找不到该人员或记录。", "No such person or record."),
    "HT-0058": ("该复核项已处理或记录已变化，请刷新后重试。", "The item was decided already or has changed."),
    "HT-0100": ("请先登录。", "Please sign in."),
    "HT-0103": ("您没有查看此居民档案的依据（诊疗关系、居民授权或紧急授权）。",
                "You have no basis to see this resident's record (treatment, consent or break-glass)."),
    "HT-0104": ("您的角色不能进行此操作，或页面已过期，请刷新后重试。",
                "Your role may not do this, or the page has expired: reload it."),
    "HT-0120": ("密码不符合密码规则。", "The password does not meet the password policy."),
    "HT-0135": ("账户信息有误（未知账户、用户名重复或缺少必填项）。",
                "Account request invalid (unknown account, duplicate name or missing field)."),
    "HT-0136": ("找不到该机构或人员。", "Unknown institution or person."),
    "HT-0141": ("找不到该审计记录。", "No such audit record."),
    "HT-0143": ("请选择复核结论。", "Choose a verdict."),
    "HT-0144": ("该紧急授权访问已复核。", "That access was reviewed already."),
    "HT-0145": ("查询条件有误，请检查日期和数字。", "A search field is invalid: check the dates and numbers."),
    "HT-0146": ("您只能查看本人或您代办的人的档案。", "You may only see your own record or those you act for."),
}.items()})

# FHIR status codes (MedicationRequest.status, Condition.clinicalStatus, Encounter.status, ...) as
# words: pages show ``t.status(code)``; a code not listed here is shown as it is.
STATUSES: dict[str, tuple[str, str]] = {
    "active": ("进行中", "active"), "completed": ("已完成", "completed"), "resolved": ("已痊愈", "resolved"),
    "inactive": ("非活动", "inactive"), "remission": ("缓解", "remission"), "recurrence": ("复发", "recurrence"),
    "relapse": ("复发", "relapse"), "stopped": ("已停止", "stopped"), "on-hold": ("暂停", "on hold"),
    "cancelled": ("已取消", "cancelled"), "entered-in-error": ("已作废", "entered in error"),
    "draft": ("草稿", "draft"), "unknown": ("未知", "unknown"), "final": ("最终报告", "final"),
    "preliminary": ("初步报告", "preliminary"), "amended": ("已修订", "amended"), "finished": ("已结束", "finished"),
    "in-progress": ("进行中", "in progress"), "planned": ("计划中", "planned"), "registered": ("已登记", "registered"),
}
MESSAGES.update({f"status.{k}": v for k, v in STATUSES.items()})


def add(messages: Mapping[str, tuple[str, str]]) -> None:
    """Register a page group's messages.  A key another group already gave a
    different text is refused: one of the two pages would otherwise show the
    other's words, depending on import order (``con.title`` was both the
    commission console's name and the resident's consent page heading)."""
    clash = sorted(k for k, v in messages.items() if k in MESSAGES and MESSAGES[k] != v)
    if clash:
        raise ValueError(f"message keys defined twice with different texts: {', '.join(clash)}")
    MESSAGES.update(messages)


# The sign-in errors the landing page names (``/?error=`` carries a code; any other text is not shown).
SIGNIN_ERRORS = frozenset(k.removeprefix("signin.err.") for k in MESSAGES if k.startswith("signin.err.HT-"))


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else "zh-CN"

    def __call__(self, key: str, **kw: object) -> str:
        zh, en = MESSAGES.get(key, (key, key))
        text = en or zh if self.lang == "en" else zh
        return text.format(**kw) if kw else text

    def status(self, code: object) -> str:
        """A FHIR status code in words (:data:`STATUSES`); an unlisted code as it is."""
        key = f"status.{code}"
        return self(key) if key in MESSAGES else str(code or "")

    @property
    def html_lang(self) -> str:
        return self.lang
