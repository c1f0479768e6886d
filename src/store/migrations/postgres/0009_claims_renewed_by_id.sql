-- A lane renews its claim by the ids it holds, which the primary key finds: the index
-- by claim token cost two writes per email (claimed, then recorded) for a lookup made
-- once every third of a lease.
DROP INDEX deliveries_by_claim;
