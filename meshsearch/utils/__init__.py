"""Small helpers every layer shares: files on disk (:mod:`.fs`) and parameter parsing (:mod:`.params`)."""
