"""One cell end to end (validate -> select -> apply -> evaluate -> record), the sweep planner, records and tracking."""
