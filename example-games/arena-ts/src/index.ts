// Arena, rules version 1 (steps of up to 10 per axis). `ludus dev example-games/arena-ts`
// serves it; change a rule here and save to see it swapped live.
import { arena } from "./arena";

export default arena(1);
