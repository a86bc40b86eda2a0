"""Execution: the Broker protocol, orders and fills, and the paper broker (live adapters implement the same
protocol)."""

from .broker import Broker, BrokerReport, Fill, Order, client_order_id  # noqa: F401
from .paper import PaperBroker  # noqa: F401
