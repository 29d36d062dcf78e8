// Every `steward bench` scenario, in the order the SPEC lists them.
import { jobsScenario } from "./jobs.ts";
import type { Scenario } from "./scenario.ts";

export const SCENARIOS: Scenario<unknown>[] = [jobsScenario];
