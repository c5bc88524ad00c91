"""The beat side: the schedule, the deadline watchdog, and (later) kill switches and batches."""
