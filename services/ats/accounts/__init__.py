"""Accounts that share nothing: creation and funding (``store``), risk profiles (``profiles``), and the binding of a
process to one account with database scoping by row-level security (``scope``). File paths: ``ats.paths.account_path``."""
