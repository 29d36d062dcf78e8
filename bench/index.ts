// Every `steward bench` scenario, in the order the SPEC lists them (then the ones it does not name).
import { batchVsCopy } from "./batch-vs-copy.ts";
import { batchVsRows } from "./batch-vs-rows.ts";
import { drain } from "./drain.ts";
import { jobsFastScenario, jobsScenario } from "./jobs.ts";
import { keysetVsOffset } from "./keyset-vs-offset.ts";
import { rateLimitExactVsGcra } from "./rate-limit-exact-vs-gcra.ts";
import { rateLimitVsFlexible } from "./rate-limit-vs-flexible.ts";
import { rateLimitVsSelect1 } from "./rate-limit-vs-select1.ts";
import type { Scenario } from "./scenario.ts";
import { trackedConcurrent } from "./tracked-concurrent.ts";
import { trackedUpdate, trackedUpdateRowTag } from "./tracked-update.ts";

export const SCENARIOS: Scenario<unknown>[] = [
  jobsScenario,
  jobsFastScenario,
  rateLimitVsSelect1,
  rateLimitVsFlexible,
  rateLimitExactVsGcra,
  trackedUpdate,
  trackedUpdateRowTag,
  trackedConcurrent,
  drain,
  keysetVsOffset,
  batchVsCopy,
  batchVsRows,
];
