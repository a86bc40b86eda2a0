"""Execution: the Broker protocol, orders and fills, client order ids, and the paper broker. The Bybit and
Alpaca adapters are being added (``bybit.py``, ``alpaca.py``) behind the same protocol."""

from .broker import Broker, BrokerReport, Fill, Order, client_order_id  # noqa: F401
from .paper import PaperBroker  # noqa: F401
