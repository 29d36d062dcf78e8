// Every `steward bench` scenario, in the order the SPEC lists them.
import { batchVsCopy } from "./batch_vs_copy.ts";
import { batchVsRows } from "./batch_vs_rows.ts";
import { drain } from "./drain.ts";
import { jobsScenario } from "./jobs.ts";
import { keysetVsOffset } from "./keyset_vs_offset.ts";
import { rateLimitVsFlexible } from "./rate_limit_vs_flexible.ts";
import { rateLimitVsSelect1 } from "./rate_limit_vs_select1.ts";
import type { Scenario } from "./scenario.ts";
import { trackedConcurrent } from "./tracked-concurrent.ts";
import { trackedUpdate, trackedUpdateRowTag } from "./tracked_update.ts";

export const SCENARIOS: Scenario<unknown>[] = [
  jobsScenario,
  rateLimitVsSelect1,
  rateLimitVsFlexible,
  trackedUpdate,
  trackedUpdateRowTag,
  trackedConcurrent,
  drain,
  keysetVsOffset,
  batchVsCopy,
  batchVsRows,
];
