"""The operator's 添加用户 form: what was typed, what is wrong with it, which doctor (issue 16, item 9).

One form, several buttons, no script needed: 查找医生 (``action=search``)
lists the institution's doctors (hutong.web.ui.doctor_directory), a 选择
button (``pick=<PractitionerRole id>``) carries the chosen post on as a
hidden value, 添加 (``action=add``) creates the account.  Every answer that
is not the created account re-renders the form with everything typed (there
is no secret in it: the initial password is generated) and, for each field
that is wrong, a zh-CN sentence with its code beside the field (HT-0460..
HT-0466).

Whose doctors: an operator whose account belongs to an institution
(``organization_id``: an institution's own operator) sees and may pick only
that institution's doctors, and adds only clinicians and operators of it
(HT-0463, HT-0466 otherwise); the platform's operators (no institution: the
regional information centre) choose the institution first.  Either way the
chosen post is re-checked against the institution on every post
(:func:`hutong.web.ui.doctor_directory.chosen`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hutong.errors import HutongError
from hutong.security.accounts import USER_ROLES, Accounts
from hutong.security.principal import Principal, Role
from hutong.store.repository import Repository
from hutong.web.ui import doctor_directory as directory
from hutong.web.ui import i18n
from hutong.web.ui.doctor_directory import Doctor, Institution

FIELDS = ("username", "name", "role", "organization", "q", "department", "practitioner_role")
LIMITS = {"username": 100, "name": 200, "role": 32, "organization": 64, "q": directory.MAX_QUERY,
          "department": 100, "practitioner_role": 64}
# Roles an institution's own operator may add: its doctors and its operators (not the
# region's commission or auditors, who read across institutions).
INSTITUTION_OPERATOR_ROLES = (Role.CLINICIAN, Role.OPERATOR)
# Roles that belong to one institution (the others are the region's).
INSTITUTION_ROLES = (Role.CLINICIAN, Role.OPERATOR)

i18n.add({
    "con.acct.org": ("机构", "Institution"),
    "con.acct.org_choose": ("请选择机构", "Choose the institution"),
    "con.acct.org_hint": ("医生和机构运维人员须属于某一机构；卫健委和审计员账户不属于机构。",
                          "Clinicians and an institution's operators belong to it; commission and auditor "
                          "accounts do not."),
    "con.acct.doctor": ("医生（添加医生账户时必选）", "Doctor (for a clinician account)"),
    "con.acct.doctor_hint": ("从该机构的医生目录中查找并选择；可按姓名（汉字、拼音或首字母）和科室查找。",
                             "Find the doctor in the institution's directory by name (characters, pinyin or "
                             "initials) and department, then choose."),
    "con.acct.q": ("按名字查找（汉字、拼音或首字母）", "Find by name (characters, pinyin or initials)"),
    "con.acct.department": ("科室", "Department"),
    "con.acct.any_department": ("全部科室", "All departments"),
    "con.acct.search": ("查找医生", "Find doctors"),
    "con.acct.pick": ("选择", "Choose"),
    "con.acct.pick_who": ("选择 {name}", "Choose {name}"),
    "con.acct.chosen": ("已选择", "Chosen"),
    "con.acct.found": ("找到 {n} 位医生", "{n} doctors found"),
    "con.acct.more": ("仅列出前 {shown} 位，请输入姓名或选择科室缩小范围。",
                      "Only the first {shown} are listed: type a name or choose a department."),
    "con.acct.none": ("没有符合条件的医生。", "No doctor matches."),
    "con.acct.fix": ("有 {n} 处需要修改，见各栏下方的说明；已填写的内容已保留。",
                     "{n} fields need changing (see beneath each); what you typed is kept."),
    "con.acct.err.HT-0460": ("用户名须为 3 到 100 个字符，不能含空格。",
                             "The username must be 3 to 100 characters without spaces."),
    "con.acct.err.HT-0461": ("该用户名已被使用，请换一个。", "This username is taken: choose another."),
    "con.acct.err.HT-0462": ("请填写姓名。", "Give the person's name."),
    "con.acct.err.HT-0463": ("您只能为本机构添加医生或运维人员账户。",
                             "You may add only clinicians and operators of your institution."),
    "con.acct.err.HT-0464": ("添加医生账户须先查找并选择一位医生。",
                             "A clinician account needs a doctor: find and choose one."),
    "con.acct.err.HT-0465": ("所选医生不是本机构目录中的医生（或已不在岗），请重新查找并选择。",
                             "The chosen doctor is not in this institution's directory (or no longer in post): "
                             "find and choose again."),
    "con.acct.err.HT-0466": ("请选择已登记的机构（只能是您所属的机构）。",
                             "Choose a registered institution (only your own)."),
    # the enrolment page
    "con.enrol.title": ("新账户与动态口令绑定", "New account and authenticator enrolment"),
    "con.enrol.once": ("账户已创建。初始密码和动态口令密钥只显示这一次，请当面交给本人，不要拍照或转发。",
                       "Account created. The initial password and the authenticator key are shown this once: "
                       "hand them over in person; do not photograph or forward them."),
    "con.enrol.account": ("账户", "Account"),
    "con.enrol.password": ("初始密码", "Initial password"),
    "con.enrol.password_hint": ("首次登录后请立即修改。", "Change it at the first sign-in."),
    "con.enrol.scan": ("请本人用手机上的身份验证器应用扫描二维码：",
                       "The person scans the QR code with an authenticator app on their phone:"),
    "con.enrol.qr": ("动态口令绑定二维码", "Authenticator enrolment QR code"),
    "con.enrol.manual": ("无法扫码时，在应用中选择“手动输入密钥”，输入：",
                         "If the app cannot scan, choose to enter a key by hand and type:"),
    "con.enrol.key": ("密钥", "Key"),
    "con.enrol.kind": ("类型：基于时间，6 位数字，30 秒", "Type: time-based, 6 digits, 30 seconds"),
    "con.enrol.uri": ("绑定地址（供支持导入地址的应用使用）", "Enrolment address (for apps that import one)"),
    "con.enrol.back": ("返回用户列表", "Back to the users"),
})


@dataclass
class AccountForm:
    """The form as the page shows it."""

    values: dict[str, str]
    roles: list[str]                                          # roles this operator may add
    bound: Institution | None = None                          # the operator's own institution
    institutions: list[Institution] = field(default_factory=list)  # the platform operator's choice
    institution: Institution | None = None                   # the institution the form is for
    departments: list[str] = field(default_factory=list)
    doctor: Doctor | None = None                              # the chosen post
    found: list[Doctor] | None = None                         # search results (None: not searched)
    shown: int = directory.MAX_SHOWN
    errors: dict[str, str] = field(default_factory=dict)     # field -> error code
    action: str = ""                                          # search, pick or add (what the post asked)

    @property
    def listed(self) -> list[Doctor]:
        return (self.found or [])[:self.shown]


def _bound(repo: Repository, operator: Principal) -> Institution | None:
    return directory.institution(repo, operator.organization_id) if operator.organization_id else None


def blank(repo: Repository, operator: Principal) -> AccountForm:
    """The empty form for ``operator``."""
    return _fill(repo, operator, {k: "" for k in FIELDS})


def _fill(repo: Repository, operator: Principal, values: dict[str, str]) -> AccountForm:
    bound = _bound(repo, operator)
    if operator.organization_id:
        roles = [str(r) for r in INSTITUTION_OPERATOR_ROLES]
        f = AccountForm(values, roles, bound=bound, institution=bound)
    else:
        f = AccountForm(values, sorted(str(r) for r in USER_ROLES), institutions=directory.institutions(repo))
        f.institution = next((i for i in f.institutions if i.id == values["organization"]), None)
    if f.institution is not None:
        f.departments = directory.departments(directory.doctors(repo, f.institution.id))
    return f


def read(repo: Repository, accounts: Accounts, operator: Principal, form: dict[str, str]) -> AccountForm:
    """The posted form, with the search it asked for, the doctor it chose and,
    when it asked to add, what is wrong with it (``errors``; empty: add it)."""
    values = {k: (form.get(k) or "").strip()[:LIMITS[k]] for k in FIELDS}
    f = _fill(repo, operator, values)
    if operator.organization_id and values["organization"] not in ("", operator.organization_id):
        f.errors["organization"] = "HT-0466"  # a forged institution: never another one's
    pick = (form.get("pick") or "").strip()
    if pick:
        values["practitioner_role"] = pick[:LIMITS["practitioner_role"]]
    if values["practitioner_role"]:
        f.doctor = _doctor(repo, f, values["practitioner_role"])
        if f.doctor is None:
            values["practitioner_role"] = ""
    action = form.get("action") or ("pick" if pick else "add")
    f.action = action if action in ("search", "pick", "add") else "search"
    if action == "search":
        if f.institution is None:
            f.errors["organization"] = "HT-0466"
        else:
            f.found = directory.find(directory.doctors(repo, f.institution.id), values["q"], values["department"])
    elif action == "add":
        _check(accounts, f)
        if f.values["role"] != Role.CLINICIAN.value:
            f.errors.pop("practitioner_role", None)  # a doctor left chosen does not matter to other roles
    return f


def _doctor(repo: Repository, f: AccountForm, role_id: str) -> Doctor | None:
    if f.institution is None:
        f.errors["practitioner_role"] = "HT-0465"
        return None
    try:
        return directory.chosen(repo, f.institution.id, role_id)
    except HutongError as e:
        f.errors["practitioner_role"] = e.code
        return None


def _check(accounts: Accounts, f: AccountForm) -> None:
    v = f.values
    username = v["username"]
    if not (3 <= len(username) <= 100) or any(ch.isspace() for ch in username):
        f.errors.setdefault("username", "HT-0460")
    elif accounts.by_username(username) is not None:
        f.errors.setdefault("username", "HT-0461")
    if not v["name"]:
        f.errors.setdefault("name", "HT-0462")
    if v["role"] not in f.roles:
        f.errors.setdefault("role", "HT-0463")
        return
    role = Role(v["role"])
    if role in INSTITUTION_ROLES and f.institution is None and (role == Role.CLINICIAN or v["organization"]):
        f.errors.setdefault("organization", "HT-0466")
    if role == Role.CLINICIAN and f.doctor is None:
        f.errors.setdefault("practitioner_role", "HT-0464")


def organization_of(f: AccountForm) -> Institution | None:
    """The institution the new account belongs to (None: one of the region's roles)."""
    role = Role(f.values["role"])
    if role not in INSTITUTION_ROLES:
        return None
    return f.bound or f.institution
