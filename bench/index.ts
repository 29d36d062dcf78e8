// Every `steward bench` scenario, in the order the SPEC lists them.
import { drain } from "./drain.ts";
import type { Scenario } from "./scenario.ts";
import { trackedUpdate } from "./tracked_update.ts";

export const SCENARIOS: Scenario<unknown>[] = [trackedUpdate, drain];
