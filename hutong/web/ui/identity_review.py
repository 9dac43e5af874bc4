"""Words and view helpers of the console's identity review (issue 16, item 6).

The routes are in hutong.web.ui.console (``/console/identity``); this module
holds what the review screens say about a score and a decision:

- the score taken apart (hutong.mpi.explain): each term as a row in words,
  the prior (base rate) included, so the rows add up to the total shown;
- the verdict, from the probability and the model's thresholds: 自动关联 at or
  above the auto-link threshold, 需人工复核 between the thresholds (saying
  which way the probability leans), 不太可能是同一人 below the review
  threshold -- never "probable match" at 8 %;
- the decision history: who (the account's name), when (Beijing time), what,
  and the note; a note is required to reject a pair or unlink a record
  (HT-0440), optional to link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

from hutong.errors import InvalidRequest
from hutong.web.ui import i18n

# The queue's lists, in tab order: each item is in exactly one (mpi_review.status).
LISTS = ("open", "linked", "rejected", "unlinked")
NOTE_LIMIT = 500

i18n.add({
    "con.id.unlinked": ("已解除关联", "Unlinked"),
    "con.id.status": ("状态", "Status"),
    "con.id.status.open": ("待复核", "open"),
    "con.id.status.linked": ("已关联", "linked"),
    "con.id.status.rejected": ("非同一人", "not the same person"),
    "con.id.status.unlinked": ("已解除关联", "unlinked"),
    "con.id.status.obsolete": ("已失效（记录已变化）", "obsolete (the records changed)"),
    "con.id.verdict": ("结论", "Verdict"),
    "con.id.verdict.auto": ("达到自动关联阈值：很可能是同一人", "at the auto-link threshold: very likely the same person"),
    "con.id.verdict.review_likely": ("需人工复核：更可能是同一人", "needs review: more likely the same person"),
    "con.id.verdict.review_unlikely": ("需人工复核：更可能不是同一人", "needs review: more likely two people"),
    "con.id.verdict.unlikely": ("不太可能是同一人（低于复核阈值）", "unlikely the same person (below the review threshold)"),
    "con.id.total": ("总权重（各项之和）", "Total weight (sum of the rows)"),
    "con.id.w": ("总权重", "total"),
    "con.id.parts": ("评分构成", "How the score is made"),
    "con.id.term.prior": ("先验（基础比率）", "Prior (base rate)"),
    "con.id.term.prior_note": ("任取两条登记为同一人的先验概率 {p}", "chance that two registrations picked at random "
                               "are one person: {p}"),
    "con.id.term.name_frequency": ("姓名常见度校正", "Name frequency adjustment"),
    "con.id.term.name_frequency_note": ("常见姓名一致的证据较弱：按该姓名在本地区的频率重算",
                                        "agreeing on a common name is weaker evidence: recomputed from the "
                                        "name's frequency in the region"),
    "con.id.formula": ("计算方法：每一行是一项证据的权重，即以2为底的似然比对数 {m_u}（{m} 为同一人时出现该比对结果的概率，"
                       "{u} 为不同人时的概率）；先验一行是基础比率的对数几率 {prior}（λ 为先验概率）；缺失的字段不计"
                       "（权重为0）。总权重为各行之和，同一人概率由总权重换算：{formula}（{method} 记录链接模型）。",
                       "Each row is the weight of one piece of evidence, the log2 likelihood ratio {m_u} ({m}: the "
                       "chance of this comparison result for the same person, {u}: for two people); the prior row is "
                       "the base rate's log-odds {prior} (λ: the prior probability); missing fields count 0. The "
                       "total is the sum of the rows and the probability follows from it: {formula} ({method} "
                       "record linkage)."),
    "con.id.thresholds": ("阈值：总权重不低于{upper}（概率{upper_p}）自动关联；介于{lower}与{upper}之间"
                          "（{lower_p}至{upper_p}）需人工复核；低于{lower}不作为候选。",
                          "Thresholds: a total of {upper} or more ({upper_p}) links automatically; between {lower} "
                          "and {upper} ({lower_p} to {upper_p}) needs review; below {lower} is no candidate."),
    "con.id.open_item": ("查看详情与处理记录", "Details and decision history"),
    "con.id.back": ("返回复核队列", "Back to the queue"),
    "con.id.history": ("处理记录", "Decision history"),
    "con.id.history.none": ("尚无人工处理记录。", "No decision yet."),
    "con.id.history.note": ("备注：{note}", "Note: {note}"),
    "con.id.history.no_note": ("（未填写备注）", "(no note)"),
    "con.id.decided.linked": ("确认为同一人并关联", "linked as the same person"),
    "con.id.decided.rejected": ("判定不是同一人", "recorded as not the same person"),
    "con.id.decided.unlinked": ("解除关联", "unlinked"),
    "con.id.who_unknown": ("（未知账户）", "(unknown account)"),
    "con.id.note_link": ("备注（可选）", "Note (optional)"),
    "con.id.note_reject": ("不是同一人的理由（必填）", "Why not the same person (required)"),
    "con.id.note_unlink": ("解除关联的理由（必填）", "Why unlink (required)"),
    "con.id.moved": ("该记录现已不在此候选人员名下（已由其他操作改变），无需在此解除关联。",
                     "The record is no longer with this candidate person (changed by another decision)."),
    "error.HT-0440": ("请填写理由：判定不是同一人或解除关联时必须说明理由。",
                      "Give a reason: rejecting a pair or unlinking a record needs a note."),
    "error.HT-0441": ("该复核项当前不是已关联状态（可能已解除关联或记录已变化），请刷新后重试。",
                      "The item is not linked now (unlinked already, or the records changed): reload the page."),
    "error.HT-0442": ("找不到该复核项。", "No such review item."),
})


def required_note(form: dict[str, str]) -> str:
    """The decision's note, required (HT-0440): a reason to reject or unlink is part of the record."""
    note = (form.get("note") or "").strip()[:NOTE_LIMIT]
    if not note:
        raise InvalidRequest("HT-0440", "请填写理由：判定不是同一人或解除关联时必须说明理由。")
    return note


def percent(p: float) -> str:
    """A probability as a percentage to one decimal, never rounded to a certainty it is not
    (0.04 % is "<0.1%", 99.97 % is ">99.9%")."""
    if p <= 0.0:
        return "0%"
    if p >= 1.0:
        return "100%"
    if p < 0.001:
        return "<0.1%"
    if p > 0.999:
        return ">99.9%"
    return f"{100 * p:.1f}%"


def hundredths(n: int) -> str:
    """A shown weight (hundredths, hutong.mpi.explain) with its sign: +13.29, -19.93, 0.00."""
    if n == 0:
        return "0.00"
    sign = "+" if n > 0 else "−"
    return f"{sign}{abs(n) // 100}.{abs(n) % 100:02d}"


def prior_percent(p: float) -> str:
    """The prior (a tiny base rate) as a percentage without exponent notation."""
    return f"{100 * p:.10f}".rstrip("0").rstrip(".") + "%"


def weight_words(w: float) -> str:
    """A threshold weight as shown (9, −4)."""
    return hundredths(round(w * 100)).rstrip("0").rstrip(".").lstrip("+")


_MATH = {"m_u": "log₂(m / u)", "m": "m", "u": "u", "prior": "log₂(λ / (1 − λ))",
         "method": "Fellegi–Sunter"}


def formula(t: Callable[..., str]) -> Markup:
    """The formula paragraph: the words translated, the symbols as code (not words of a language)."""
    w = t("con.id.w")
    math = {**_MATH, "formula": f"p = 2^{w} ÷ (1 + 2^{w})"}
    return Markup(escape(t("con.id.formula"))).format(
        **{k: Markup("<code>{}</code>").format(v) for k, v in math.items()})


def helpers() -> dict[str, Any]:
    """What the identity templates use besides the item itself."""
    return {"percent": percent, "hundredths": hundredths, "prior_percent": prior_percent,
            "weight_words": weight_words, "lists": LISTS, "id_formula": formula}
