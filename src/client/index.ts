// What application code imports: the `pg-steward` package entry. Each export binds steward
// SQL functions a role holding steward_client may execute (rate limits, leases, circuits, pages),
// except the jobs helpers, which need a role that may add jobs (graphile_worker.add_job).
export { RateLimitArgumentError, RateLimiter } from "./rate-limits.ts";
export type { RateLimitDecision, RateLimiterOptions, RateLimitWindow } from "./rate-limits.ts";
export { rateLimitHeaders } from "./rate-limit-headers.ts";
export type { RateLimitHeaders } from "./rate-limit-headers.ts";
export { Leases, LeaseUnavailableError } from "./leases.ts";
export type { LeaseOptions } from "./leases.ts";
export { CircuitOpenError, CircuitTimeoutError, Circuits } from "./circuits.ts";
export type { CircuitState, CircuitTransition, WithCircuitOptions } from "./circuits.ts";
export { page, pages } from "./pagination.ts";
export type { Page, PageOptions } from "./pagination.ts";
export { enqueueJob, jobOutcome, waitForJob } from "./jobs.ts";
export type { EnqueueOptions, JobOutcome } from "./jobs.ts";
export { batchInsert, enqueueInvalidation } from "./writes.ts";
export type { BatchInsertOptions } from "./writes.ts";
