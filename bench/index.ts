// Every `steward bench` scenario, in the order the SPEC lists them (`jobs_fast`, from issue 20,
// beside `jobs`).
import { batchVsCopy } from "./batch_vs_copy.ts";
import { batchVsRows } from "./batch_vs_rows.ts";
import { drain } from "./drain.ts";
import { jobsFastScenario, jobsScenario } from "./jobs.ts";
import { keysetVsOffset } from "./keyset_vs_offset.ts";
import { rateLimitVsFlexible } from "./rate_limit_vs_flexible.ts";
import { rateLimitVsSelect1 } from "./rate_limit_vs_select1.ts";
import type { Scenario } from "./scenario.ts";
import { trackedUpdate } from "./tracked_update.ts";

export const SCENARIOS: Scenario<unknown>[] = [
  jobsScenario,
  jobsFastScenario,
  rateLimitVsSelect1,
  rateLimitVsFlexible,
  trackedUpdate,
  drain,
  keysetVsOffset,
  batchVsCopy,
  batchVsRows,
];
