"""`python -m doctor`: checks the machine MoE Chat runs on, one line per check with the fix."""
