"""Local venue simulators on 127.0.0.1 (Bybit v5, Alpaca) speaking each venue's REST API with its exact response
shapes, for tests and offline rehearsals of the live loop (`ats venue-sim bybit|alpaca ...`)."""
