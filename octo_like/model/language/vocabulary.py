"""The embedded text encoder's tokenizer: a broad instruction vocabulary the package ships.

Runs without a downloaded T5 (`make train`, the synthetic and simulated mixes) train the `small`
text encoder from scratch over a sentencepiece model. Trained on the configured tasks'
instructions alone, that model knew ~50 pieces: an unseen word ("coffee", "microwave") was
spelled letter by letter and an unseen character became <unk>. `write_embedded_tokenizer` trains
it on those instructions plus `WORDS` (the verbs, objects, places, colours and function words of
tabletop and household robot instructions, MetaWorld's and Open X-Embodiment's included) and
turns on byte fallback, so:

- ordinary words are whole pieces (or a few sub-word pieces), seen in the run's data or not;
- nothing is lost: a character outside the vocabulary is encoded as its UTF-8 bytes, and
  `decode(encode(text)) == text` for any text;
- fine-tuning on new instructions keeps the pretrained text encoder's tokenizer and still reads
  its words.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import sentencepiece

from octo_like.model.language.tokenizer import EOS_ID, PAD_ID, SPIECE_FILENAME

EMBEDDED_VOCAB_SIZE = 4096
# Part of the simulated mixes' tokenizer cache key: bump it when `WORDS` or the training changes.
EMBEDDED_TOKENIZER_VERSION = 3

_WORDS_TEXT = """
a an the this that these those it its them their there here some any all each every both one two
three four five six seven eight nine ten first second third last next other another same different
and or but not no yes then while until before after again once twice more less most least very
of to from into onto on in at by with without for over under above below behind beside between
near next far around through across along against toward towards away off out up down inside
outside upward downward forward backward back front left right top bottom middle center centre
side edge corner end start half upper lower leftmost rightmost closest nearest farthest
pick place put take grab grasp hold release drop lift raise lower move push pull slide turn rotate
twist flip open close shut press tap touch poke hit knock sweep wipe clean scrub wash dry pour fill
empty stack unstack insert remove plug unplug hang unhang fold unfold unfolding folding spread
stir mix cut chop slice peel scoop dump throw toss roll kick bounce reach point go come bring
carry deliver fetch hand give return set lay stand tilt tip shake squeeze stretch wrap unwrap
cover uncover zip unzip button unbutton tie untie lock unlock switch toggle adjust align arrange
sort organize sorting put placing picking pushing pulling opening closing turning moving
rotating pressing sliding lifting dropping stacking inserting removing hanging wiping sweeping
reaching pouring grasping holding use assemble drive dunk past backwards quarter spout
block blocks cube cubes ball balls box boxes bin bins bowl bowls cup cups mug mugs plate plates
dish dishes pot pots pan pans lid lids jar jars bottle bottles can cans glass glasses spoon spoons
fork forks knife knives spatula ladle tray trays basket baskets bag bags towel towels cloth cloths
napkin sponge brush broom mop bucket drawer drawers door doors window windows cabinet cabinets
shelf shelves rack racks table tables desk counter sink faucet tap stove oven microwave fridge
refrigerator freezer dishwasher toaster kettle coffee machine maker button buttons switch lever
knob knobs dial dials handle handles key keys lock hook hooks peg pegs hole holes slot slots
ring rings nut nuts bolt bolts screw screws hammer nail nails wrench screwdriver tool tools
stick sticks rod pole rope string wire cable plug socket outlet charger phone remote laptop
keyboard mouse book books notebook paper papers pen pens pencil marker markers eraser scissors
tape stapler clip clips folder toy toys doll car truck puck goal net hoop basketball soccer
football plant plants flower flowers vase pillow blanket sheet shirt shirts pants sock socks
shoe shoes hat cap jacket clothes laundry food fruit fruits apple apples banana bananas orange
oranges lemon lime grape grapes strawberry carrot carrots potato potatoes tomato tomatoes onion
pepper corn bread sandwich egg eggs cheese milk juice water soda snack chips cookie candy cereal
rice pasta soup salt sugar sauce ketchup object objects item items thing things piece pieces
part parts assembly window wall floor ground surface board cutting stand base platform box
container containers lid cap top cover tower pyramid stack pile row line column circle square
triangle rectangle star heart shape shapes letter letters number numbers target targets zone
area region spot position location tabletop workspace robot gripper arm hand fingers camera
red green blue yellow orange purple pink brown black white gray grey silver gold golden dark
light bright colored coloured wooden wood metal metallic plastic glass paper cardboard rubber
soft hard small big large tiny huge long short tall wide narrow thin thick round flat square
heavy empty full clean dirty wet dry hot cold new old open closed half upright sideways upside
slowly quickly gently carefully firmly fully halfway partly completely
please now then first finally make sure so that
"""

WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORDS_TEXT.split()))


def _corpus(instructions: Sequence[str]) -> list[str]:
    """Training sentences: the run's instructions, every shipped word after "the", digits and
    capitals, each repeated so that BPE merges every word into one piece."""
    lines = [text for text in instructions if text.strip()] * 20
    lines += [f"the {word}" for word in WORDS] * 10  # frequent enough to stay whole pieces
    lines += [" ".join("0123456789"), " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ")] * 10
    return lines


def write_embedded_tokenizer(
    directory: str, instructions: Sequence[str], vocab_size: int = EMBEDDED_VOCAB_SIZE
) -> int:
    """Writes ``directory/spiece.model`` (T5 ids: pad 0, eos 1, unk 2; byte fallback); returns
    its number of pieces."""
    os.makedirs(directory, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(instructions)),
        model_writer=model,
        model_type="bpe",  # merges until every frequent word is one piece
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # the corpus may support fewer pieces
        byte_fallback=True,  # characters outside the vocabulary become their UTF-8 bytes
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path = os.path.join(directory, SPIECE_FILENAME)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return sentencepiece.SentencePieceProcessor(model_file=path).get_piece_size()
