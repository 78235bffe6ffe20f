import { arena } from "../../arena-ts/src/arena";

export default arena(2);
