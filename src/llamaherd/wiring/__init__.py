"""What builds the server: the composition root. From the settings it makes the supervisors,
the herd, the access policy, the cluster and the telemetry, and hands them to each other;
nothing below this package knows the config file."""
