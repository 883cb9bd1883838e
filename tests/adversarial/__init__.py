"""Adversarial tests: what an attacker or a careless user would give volcam."""
