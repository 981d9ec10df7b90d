-- Runs once when the compose PostgreSQL is first created: the service roles with local
-- passwords (`orderflow migrate` creates them too where missing, without a password, and
-- grants each its privileges).
CREATE ROLE orderflow_checkout LOGIN PASSWORD 'checkout-local';
CREATE ROLE orderflow_consumer LOGIN PASSWORD 'consumer-local';
CREATE ROLE orderflow_query LOGIN PASSWORD 'query-local';
CREATE ROLE orderflow_analyst LOGIN PASSWORD 'analyst-local';
-- The schema registry's own role and database (Apicurio creates its tables there).
CREATE ROLE orderflow_registry LOGIN PASSWORD 'registry-local';
CREATE DATABASE registry OWNER orderflow_registry;
