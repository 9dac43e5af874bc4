"""Allergens recorded as AllergyIntolerance, with rough prevalences.

Penicillin allergy labels are the most common drug allergy recorded in
Chinese hospitals (a few percent of inpatients); rates here are rough
defaults.  Codes are Hutong's own (no national allergen code system is
mandated); the ATC code is added for drug classes.
"""

from __future__ import annotations

from hutong.systems import CODESYSTEM_BASE

ALLERGEN_SYSTEM = CODESYSTEM_BASE + "allergen"
ATC_SYSTEM = "http://www.whocc.no/atc"

# key -> (中文, category, ATC or "", share of residents with this allergy recorded, reaction)
ALLERGENS: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("penicillin", "青霉素类", "medication", "J01C", 0.035, "皮疹"),
    ("cephalosporin", "头孢菌素类", "medication", "J01D", 0.010, "皮疹"),
    ("sulfonamide", "磺胺类", "medication", "J01E", 0.008, "荨麻疹"),
    ("aspirin", "阿司匹林", "medication", "N02BA01", 0.003, "哮喘发作"),
    ("iodinated-contrast", "碘造影剂", "medication", "V08A", 0.004, "荨麻疹"),
    ("seafood", "海鲜", "food", "", 0.012, "荨麻疹"),
    ("peanut", "花生", "food", "", 0.003, "血管性水肿"),
    ("pollen", "花粉", "environment", "", 0.010, "过敏性鼻炎"),
)
