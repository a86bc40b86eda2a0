"""Risk layer: settings (documented defaults), fractional-Kelly sizing, position/portfolio limits and circuit
breakers. Breakers halt new entries and adds; exits always continue."""

from .breakers import BREAKERS, BreakerBoard, Transition  # noqa: F401
from .limits import RiskDecision, check_entry, exposure_correlation  # noqa: F401
from .settings import DEFAULTS, SETTINGS, SettingsView, seed_settings  # noqa: F401
from .sizing import KellyEstimate, estimate, kelly_fraction  # noqa: F401
