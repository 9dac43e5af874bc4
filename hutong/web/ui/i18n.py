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
    "error.title": ("无法完成请求", "The request could not be completed"),
    "error.back": ("返回", "Back"),
}


def add(messages: Mapping[str, tuple[str, str]]) -> None:
    """Register a page group's messages.  A key another group already gave a
    different text is refused: one of the two pages would otherwise show the
    other's words, depending on import order (``con.title`` was both the
    commission console's name and the resident's consent page heading)."""
    clash = sorted(k for k, v in messages.items() if k in MESSAGES and MESSAGES[k] != v)
    if clash:
        raise ValueError(f"message keys defined twice with different texts: {', '.join(clash)}")
    MESSAGES.update(messages)


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else "zh-CN"

    def __call__(self, key: str, **kw: object) -> str:
        zh, en = MESSAGES.get(key, (key, key))
        text = en or zh if self.lang == "en" else zh
        return text.format(**kw) if kw else text

    @property
    def html_lang(self) -> str:
        return self.lang
