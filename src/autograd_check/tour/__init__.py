"""The tutorial's ideas as live, checked steps."""
