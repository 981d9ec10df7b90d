-- One database per region (each region has a server of its own in production).
CREATE DATABASE orderflow_eu;
CREATE DATABASE orderflow_us;
