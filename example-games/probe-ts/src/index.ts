// A test fixture: each message (text) asks for one thing, and the answer goes back to
// its sender as JSON.
//
// - "random": three draws of Math.random and one of room.random();
// - "now": Date.now() and the host's clock (room.now());
// - "log": a line on console.log and one on console.error;
// - "throw": an uncaught exception;
// - "spin": a loop that never ends;
// - anything else: {"messages": n}, the count of messages so far.
import { defineGame, text } from "@ludus/game";

export default defineGame<{ messages: number }>({
  name: "probe",
  version: "1.0.0",
  init(room) {
    console.log(`probe room ${room.id} started`);
    return { messages: 0 };
  },
  message(state, room, from, msg) {
    const ask = text(msg);
    switch (ask) {
      case "random":
        room.sendJson(from, {
          math: [Math.random(), Math.random(), Math.random()],
          host: String(room.random()),
        });
        return;
      case "now":
        room.sendJson(from, { date: Date.now(), host: room.now() });
        return;
      case "log":
        console.log(`console.log in room ${room.id}`);
        console.error(`console.error in room ${room.id}`);
        room.sendJson(from, { logged: true });
        return;
      case "throw":
        throw new Error("the probe was asked to throw");
      case "spin":
        for (;;) {}
      default:
        state.messages += 1;
        room.sendJson(from, { messages: state.messages });
    }
  },
});
