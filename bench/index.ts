// Every `steward bench` scenario, in the order the SPEC lists them.
import { rateLimitVsFlexible } from "./rate_limit_vs_flexible.ts";
import { rateLimitVsSelect1 } from "./rate_limit_vs_select1.ts";
import type { Scenario } from "./scenario.ts";

export const SCENARIOS: Scenario<unknown>[] = [rateLimitVsSelect1, rateLimitVsFlexible];
