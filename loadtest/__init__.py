"""Everything that evaluates Presage: testbed, load generators, shoot-out harness and simulator."""
