"""`cambatch check`: a run judged against a policy (and a baseline run), ending in a verdict."""
