"""`wanflow webhook listen`: a loopback receiver that verifies wanflow's signed webhook deliveries."""
